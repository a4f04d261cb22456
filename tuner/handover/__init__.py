"""From the chosen configuration to what an operator runs: where each replica sits on the nodes
(``topology``), which checkpoint each engine loads (``checkpoints``), the launch scripts
(``scripts``) and the Kubernetes manifests (``k8s``)."""
