"""What the simulator is told, as data: the specs (``specs``), the model presets and Hugging
Face configs (``models``), each family's description of its matrices and cache
(``architecture``), the GPU profiles (``hardware``), and the traffic: workloads, traces and
SLOs (``workload``, ``traces``, ``slo``). Nothing here knows how a step is costed."""
