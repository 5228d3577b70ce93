"""The distillation loss: the teacher's softened posteriors against the student's, per frame.

``(1 - w) * CTC + w * T^2 * KL(teacher_T || student_T)`` over each utterance's valid frames
(``ssl_ctc.distillation.teacher`` trains with it). Where the student's CTC frames cover another
span of input samples than the teacher's (downsampling), the target of a student frame is
what the teacher emits within its span (``span_log_posteriors``).

Usage::

    loss = distillation_loss(student_log_probs, student_lengths, teacher_log_probs,
                             teacher_lengths, student_stride, teacher_stride, temperature)
"""


import torch


def tempered_log_probs(log_probs, temperature):
    """Log-posteriors softened by a temperature: ``log_softmax(logits / T)`` from log-probs.

    Log-probs differ from the logits by a constant per frame, which the softmax removes,
    so the cache can hold temperature-free log-probs.

    Example
    -------
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> tempered = tempered_log_probs(logits.log_softmax(-1), 2.0)
    >>> torch.allclose(tempered, (logits / 2).log_softmax(-1))
    True
    """
    return torch.log_softmax(log_probs.float() / temperature, dim=-1)


def frame_overlap_fractions(student_frames, student_stride, teacher_lengths, teacher_frames,
                            teacher_stride):
    """Fraction of each valid teacher frame that falls in each student frame's span of samples.

    Frame ``j`` of a model with ``s`` input samples per CTC frame spans samples
    ``[j s, (j + 1) s)``. A student frame past the teacher's last valid frame (a frame
    more, from rounding) takes that last frame whole; padded teacher frames count for
    nothing.

    Arguments
    ---------
    student_frames : int
        Padded student frames ``S``.
    student_stride : float
        Input samples per student CTC frame (``frame_grid()[1]``).
    teacher_lengths : torch.Tensor
        ``[B]`` valid teacher frames.
    teacher_frames : int
        Padded teacher frames ``T``.
    teacher_stride : float
        Input samples per teacher CTC frame.

    Returns
    -------
    torch.Tensor
        ``[B, S, T]`` float32.

    Example
    -------
    >>> frame_overlap_fractions(3, 480, torch.tensor([3]), 4, 320)[0]  # SD3, CTC x2
    tensor([[1.0000, 0.5000, 0.0000, 0.0000],
            [0.0000, 0.5000, 1.0000, 0.0000],
            [0.0000, 0.0000, 1.0000, 0.0000]])
    """
    device = teacher_lengths.device
    batch_size = teacher_lengths.shape[0]
    student_start = torch.arange(student_frames, device=device, dtype=torch.float64)
    student_start = student_start[None, :, None] * student_stride
    teacher_start = torch.arange(teacher_frames, device=device, dtype=torch.float64)
    teacher_start = teacher_start[None, None] * teacher_stride
    overlap = (torch.minimum(student_start + student_stride, teacher_start + teacher_stride)
               - torch.maximum(student_start, teacher_start)).clamp(min=0) / teacher_stride
    valid = torch.arange(teacher_frames, device=device)[None] < teacher_lengths[:, None]
    fractions = torch.where(valid[:, None], overlap, torch.zeros_like(overlap))
    uncovered = fractions.sum(dim=-1) == 0  # past the teacher's last frame
    last_frame = (teacher_lengths.long() - 1).clamp(min=0)
    last = torch.nn.functional.one_hot(last_frame, teacher_frames).to(fractions.dtype)
    fractions = torch.where(uncovered[..., None], last[:, None].expand(batch_size, -1, -1),
                            fractions)
    return fractions.float()


# Log-probabilities are kept above this (a probability of 4e-44), so that a frame
# outside a span (fraction 0) never multiplies an infinity.
LOG_FLOOR = -100.0


def log_one_minus(log_probs):
    """``log(1 - p)`` from ``log p``, finite (within ``LOG_FLOOR``) even where ``p`` is 1."""
    return torch.log(-torch.expm1(log_probs.clamp(max=-1e-7))).clamp(min=LOG_FLOOR)


def span_log_posteriors(teacher_log_probs, teacher_lengths, student_frames, student_stride,
                        teacher_stride, blank_index=0):
    """The teacher's log-posteriors on the student's frames: what it emits within each span.

    A student frame should emit a character when the teacher emits it in any frame
    of the student frame's span of samples, and blank when the teacher emits only
    blanks there. With the teacher's frames independent (CTC's assumption) and
    ``a_i`` the fraction of teacher frame ``i`` in the span, label ``c`` gets
    ``1 - prod (1 - p_i(c)) ** a_i`` and blank ``prod p_i(blank) ** a_i``, normalised
    over the labels. At the same frame rate this is the teacher's frame itself (past
    its last valid frame, that frame again); a student frame spanning a blank and a
    character (SD2) learns the character, where averaging the two would give 50/50.

    Arguments
    ---------
    teacher_log_probs : torch.Tensor
        ``[B, T, V]`` the teacher's CTC log-probs (at temperature 1).
    teacher_lengths : torch.Tensor
        ``[B]`` its valid frames.
    student_frames : int
        Padded student frames.
    student_stride, teacher_stride : float
        Input samples per CTC frame of the student and of the teacher.
    blank_index : int
        The CTC blank label.

    Returns
    -------
    torch.Tensor
        ``[B, student_frames, V]`` log-probabilities, float32.

    Example
    -------
    >>> teacher = torch.tensor([[[.98, .01, .01], [.01, .98, .01], [.98, .01, .01],
    ...                          [.98, .01, .01]]]).log()  # blank, A, blank, blank
    >>> span_log_posteriors(teacher, torch.tensor([4]), 2, 640, 320).exp()  # SD2
    tensor([[[0.0097, 0.9706, 0.0197],
             [0.9602, 0.0199, 0.0199]]])
    """
    teacher_log_probs = teacher_log_probs.float()
    if student_stride == teacher_stride and student_frames <= teacher_log_probs.shape[1]:
        index = torch.minimum(torch.arange(student_frames, device=teacher_log_probs.device)[None],
                              (teacher_lengths[:, None] - 1).clamp(min=0))
        labels = teacher_log_probs.shape[-1]
        return teacher_log_probs.gather(1, index[..., None].expand(-1, -1, labels))
    fractions = frame_overlap_fractions(student_frames, student_stride, teacher_lengths,
                                        teacher_log_probs.shape[1], teacher_stride)
    log_probs = teacher_log_probs.clamp(min=LOG_FLOOR)
    emitted = log_one_minus(torch.bmm(fractions, log_one_minus(log_probs)))
    only_blank = torch.bmm(fractions, log_probs[..., blank_index:blank_index + 1])
    label = torch.arange(log_probs.shape[-1], device=log_probs.device)
    return torch.where(label == blank_index, only_blank, emitted).log_softmax(dim=-1)


def utterance_kl(teacher_log_probs, student_log_probs, lengths):
    """KL(teacher || student) per frame, averaged over each utterance's valid frames.

    Arguments
    ---------
    teacher_log_probs : torch.Tensor
        ``[B, S, V]`` teacher log-posteriors on the student's frames (finite).
    student_log_probs : torch.Tensor
        ``[B, S, V]`` student log-posteriors (at the same temperature).
    lengths : torch.Tensor
        ``[B]`` valid student frames: padded frames count for nothing, whatever they hold.

    Returns
    -------
    torch.Tensor
        ``[B]``: an utterance's value is the same alone and in any padded batch.

    Example
    -------
    >>> student = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]).log()
    >>> teacher = torch.tensor([[[0.5, 0.5], [0.8, 0.2]]]).log()
    >>> utterance_kl(teacher, student, torch.tensor([2]))  # (0 + 0.1927) / 2
    tensor([0.0964])
    >>> utterance_kl(teacher, student, torch.tensor([1]))
    tensor([0.])
    """
    frame_kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)
    valid = torch.arange(frame_kl.shape[1], device=frame_kl.device)[None] < lengths[:, None]
    frame_kl = torch.where(valid, frame_kl, torch.zeros_like(frame_kl))
    return frame_kl.sum(dim=1) / lengths.to(frame_kl.dtype).clamp(min=1)


def distillation_loss(student_log_probs, student_lengths, teacher_log_probs, teacher_lengths,
                      temperature, student_stride, teacher_stride, blank_index=0):
    """``T^2`` times the batch mean of each utterance's frame-averaged KL(teacher_T || student_T).

    Arguments
    ---------
    student_log_probs : torch.Tensor
        ``[B, S, V]`` the student's CTC log-probs.
    student_lengths : torch.Tensor
        ``[B]`` its valid frames (``predictions["lengths"]``, exact).
    teacher_log_probs : torch.Tensor
        ``[B, T, V]`` the teacher's CTC log-probs.
    teacher_lengths : torch.Tensor
        ``[B]`` its valid frames.
    temperature : float
        Softens both distributions; ``T^2`` keeps the gradient's scale (Hinton et al. 2015).
    student_stride, teacher_stride : float
        Input samples per CTC frame of each (``frame_grid()[1]``): at different rates
        the teacher is first taken over the student's frames (``span_log_posteriors``).
    blank_index : int
        The CTC blank label.

    Returns
    -------
    torch.Tensor
        A scalar, float32.

    Example
    -------
    >>> log_probs = torch.randn(2, 5, 4).log_softmax(-1)
    >>> lengths = torch.tensor([5, 3])
    >>> float(distillation_loss(log_probs, lengths, log_probs, lengths, 2.0, 320, 320))
    0.0
    """
    teacher = span_log_posteriors(teacher_log_probs, teacher_lengths.to(student_log_probs.device),
                                  student_log_probs.shape[1], student_stride, teacher_stride,
                                  blank_index)
    teacher = tempered_log_probs(teacher, temperature)
    student = tempered_log_probs(student_log_probs, temperature)
    return temperature ** 2 * utterance_kl(teacher, student, student_lengths).mean()


def alignment_name(student_stride, teacher_stride):
    """How the student's frames meet the teacher's, for records and the model card.

    Example
    -------
    >>> alignment_name(320, 320), alignment_name(480.0, 320)
    ('frame by frame', "the teacher's emissions over each student frame (480 vs 320 samples)")
    """
    if student_stride == teacher_stride:
        return "frame by frame"
    return (f"the teacher's emissions over each student frame ({student_stride:g} vs "
            f"{teacher_stride:g} samples)")


def frame_rate_advice(student_stride, teacher_stride, ctc_upsampling_factor=1):
    """The warning for a student whose CTC frames are not the teacher's, with the way out.

    Frame-level targets at another frame rate ask for a timing the student cannot
    produce: on the embedded default such students ended worse than their CTC-only
    twins (SD2, CL3; only SD4 gained, after 12 epochs), while at the teacher's frame rate
    every one ended better (docs/RESULTS.md).

    Example
    -------
    >>> advice = frame_rate_advice(480, 320, 2)  # CL3 with CTC x2
    >>> advice.split(":")[0]
    "the student's CTC frames are 480 samples apart, the teacher's 320"
    >>> "--ctc_upsampling_factor 3 gives it the teacher's frame rate" in advice
    True
    """
    factor = ctc_upsampling_factor * student_stride / teacher_stride
    way_out = (f"--ctc_upsampling_factor {factor:g} gives it the teacher's frame rate, where "
               "distillation helped every student measured" if float(factor).is_integer()
               else "a CTC upsampling factor that gives it the teacher's frame rate is "
               "where distillation helped")
    return (f"the student's CTC frames are {student_stride:g} samples apart, the teacher's "
            f"{teacher_stride:g}: frame-level distillation at another frame rate made such "
            f"students (SD2, CL3) worse than without a teacher on the embedded default; {way_out} "
            "(docs/RESULTS.md)")
