"""Knowledge distillation: a fast variant learns from a finished, full fine-tuned model.

- ``checks``: the distillation keys, teacher and student folders checked before anything is
  written (``check_distillation``, called by ``ssl_ctc.recipe``);
- ``loss``: the teacher's softened posteriors against the student's, per frame, across
  frame rates (``distillation_loss``);
- ``teacher``: the teacher of a training run (``Distiller``): loaded frozen, its posteriors
  cached, the loss term mixed with CTC, its identity in the records and the model card.

Usage::

    python downsampled_train.py hparams/downsampling.yaml --data_folder /path/to/LibriSpeech \\
        --output_folder results/SD2_KD --teacher results/baseline \\
        --distillation_weight 0.25 --distillation_temperature 1
"""
