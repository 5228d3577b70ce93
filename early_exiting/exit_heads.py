"""CTC heads on intermediate encoder layers, one per exit.

The heads live in a ``torch.nn.ModuleDict`` keyed by layer number, so they are
saved and restored with the model, moved by ``.to()``, optimised and counted.

Usage: ``exit_heads = ExitHeads(range(13, 25), input_size=1024, output_size=31)``
"""

import operator

import torch


def check_exit_layers(exit_layers, num_layers=None):
    """Validate exit layers (1-based: exit N is after transformer layer N).

    Arguments
    ---------
    exit_layers : iterable of int
        Layers after which an exit head runs.
    num_layers : int, optional
        Depth of the encoder; when given, every exit layer must be at most this.

    Returns
    -------
    list of int
        The exit layers, sorted.

    Raises
    ------
    ValueError
        If empty, repeated, not integers, or outside ``1..num_layers``.

    Example
    -------
    >>> check_exit_layers([4, 3], num_layers=4)
    [3, 4]
    >>> check_exit_layers([5], num_layers=4)
    Traceback (most recent call last):
     ...
    ValueError: exit layer 5 is outside 1..4: the encoder has 4 transformer layers
    """
    depth = f"1..{num_layers}" if num_layers is not None else "layers numbered from 1"
    try:
        layers = [operator.index(layer) for layer in exit_layers]
    except TypeError as error:
        raise ValueError(f"exit layers must be integers ({depth}), got {exit_layers!r}") from error
    if not layers:
        raise ValueError(f"no exit layer given: give at least one in {depth}")
    for layer in layers:
        if layer < 1 or (num_layers is not None and layer > num_layers):
            if num_layers is None:
                raise ValueError(f"exit layer {layer} is invalid: {depth}")
            raise ValueError(
                f"exit layer {layer} is outside {depth}: "
                f"the encoder has {num_layers} transformer layers"
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"exit layers are repeated: {layers}")
    return sorted(layers)


class ExitHeads(torch.nn.Module):
    """One CTC head per exit layer: Linear, activation, Linear, log-softmax.

    Arguments
    ---------
    exit_layers : iterable of int
        Layers (1-based) after which an exit head runs, e.g. ``range(13, 25)``.
    input_size : int
        Hidden size of the encoder.
    output_size : int
        Number of CTC outputs (vocabulary and blank).
    dnn_neurons : int
        Width of the hidden linear layer (1024 in the paper).
    activation : type
        Activation class between the two linear layers.

    Example
    -------
    >>> heads = ExitHeads([2, 3], input_size=32, output_size=8, dnn_neurons=16)
    >>> heads.exit_layers
    [2, 3]
    >>> log_probs = heads(torch.randn(4, 10, 32), layer=3)
    >>> log_probs.shape
    torch.Size([4, 10, 8])
    >>> bool(torch.allclose(log_probs.exp().sum(-1), torch.ones(4, 10)))
    True
    >>> sorted(heads.state_dict())[:2]
    ['heads.2.0.bias', 'heads.2.0.weight']
    """

    def __init__(
        self,
        exit_layers,
        input_size,
        output_size,
        dnn_neurons=1024,
        activation=torch.nn.LeakyReLU,
    ):
        super().__init__()
        self.exit_layers = check_exit_layers(exit_layers)
        self.input_size = input_size
        self.output_size = output_size
        self.heads = torch.nn.ModuleDict(
            {
                str(layer): torch.nn.Sequential(
                    torch.nn.Linear(input_size, dnn_neurons),
                    activation(),
                    torch.nn.Linear(dnn_neurons, output_size),
                )
                for layer in self.exit_layers
            }
        )

    def forward(self, hidden_states, layer):
        """CTC log-probabilities of the exit after ``layer``.

        Arguments
        ---------
        hidden_states : torch.Tensor
            ``[B, T, input_size]`` output of transformer layer ``layer``.
        layer : int
            The exit layer (1-based).

        Returns
        -------
        torch.Tensor
            ``[B, T, output_size]`` log-probabilities.
        """
        if layer not in self.exit_layers:
            raise ValueError(f"no exit head after layer {layer}; exit layers: {self.exit_layers}")
        return torch.log_softmax(self.heads[str(layer)](hidden_states), dim=-1)
