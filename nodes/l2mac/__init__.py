"""L2MAC: long outputs built instruction by instruction over a versioned file store (``l2mac.*``).

- :mod:`~mnemoflow.nodes.l2mac.model`: what is stored (project, instructions, file versions) and how each id is derived;
- :mod:`~mnemoflow.nodes.l2mac.files`: the file store and instruction registry of a run thread, and path checks;
- :mod:`~mnemoflow.nodes.l2mac.state`: the state of a run;
- :mod:`~mnemoflow.nodes.l2mac.agents`: what is said to the model, the plan it replies, and the offline stand-in;
- :mod:`~mnemoflow.nodes.l2mac.control`: the control unit's nodes, with :mod:`~mnemoflow.nodes.l2mac.tools` (the
  step tools and their dispatch), :mod:`~mnemoflow.nodes.l2mac.checks` (the evaluator: syntax, pylint's error codes
  and the tests in the sandbox; the model's own runs), :mod:`~mnemoflow.nodes.l2mac.window` (the context window)
  and :mod:`~mnemoflow.nodes.l2mac.claim` (one process per thread);
- :mod:`~mnemoflow.nodes.l2mac.export`: writing a run's files to disk.
"""
