"""Distillation toolkit: train small QRH domain experts from larger teachers (SPEC §5).

The pieces, one module each, with one resolver per kind of component:

* :mod:`distill.losses` — KD (``T^2 KL``, token-averaged), reverse KL, JSD, alignment (MSE / cosine
  through a projection), resistance-weighted task loss, the alpha-mix and ``L_total``;
  ``loss_resolver``.
* :mod:`distill.aggregation` — multi-teacher operators on probabilities (arithmetic, normalised
  geometric, confidence-weighted); ``teacher_aggregator_resolver``.
* :mod:`distill.data` — corpora windows, kept vocabulary, resistance, samplers (``sampler_resolver``),
  staged curriculum, temperature annealing.
* :mod:`distill.teachers` — causal-LM teacher restricted to the student's vocabulary, sentence
  encoders, the on-disk teacher cache (each teacher runs once).
* :mod:`distill.recipe` — ``setup / train / save_checkpoint / cleanup``, YAML configs with
  ``key=value`` overrides, profile + registration of the trained expert.
* :mod:`distill.distributed` — data-parallel runs under ``torchrun`` / ``accelerate launch`` (DDP,
  each rank a slice of every global batch, rank 0 writes).

Example (the command line does the same: ``qsef distill distill/configs/law.yaml optim.steps=50``):

    >>> from distill.recipe import load_config, run
    >>> info = run(load_config("distill/configs/law.yaml", ["optim.steps=50"]), settings=Settings())
    >>> info["eval"]          # {"ppl": ..., "kl_to_teacher": ..., "top1_agreement": ...}
"""
