"""Shared by the API and the workers, one concern per subpackage.

- ``models.spec``: the request language (pydantic specs of networks, losses, optimizers, jobs).
- ``models.nn``: the PyTorch side (build a spec, check shapes, graphs, the state codec, job plans).
- ``models.store``: Redis (every key name, the connection, job records).
- ``models.wire``: what travels (tensor forms and codecs, the session call protocol).
- At the root, the process contract: ``settings``, ``errors``, ``tasks`` (task names and queues).
"""
