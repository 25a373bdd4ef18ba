"""KFP v2 components and pipelines: what runs when the daemon launches a retrain.

The same definition runs on a Kubernetes cluster with GPUs through Kubeflow Pipelines and on a laptop CPU
through ``kfp.local``. Components use the project's own code from the trainer image.
"""
