"""attnless: attentionless Transformers (arXiv 2311.10642), reproducibly.

The Python API mirrors the CLI verbs (see :mod:`attnless.api`)::

    from attnless import api
    cfg = api.load_config("experiments/quick.yaml")
    api.train(cfg)
    api.evaluate(cfg)
"""

__version__ = "0.1.0"
