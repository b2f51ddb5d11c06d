"""Task Memory Engine: a task forest per conversation, TRIM intents and revision propagation (``tme.*``).

- :mod:`~mnemoflow.nodes.tme.model`: what is stored (sessions, task nodes, turns) and how each id is derived;
- :mod:`~mnemoflow.nodes.tme.conversation`: loading a conversation and saving one turn of it;
- :mod:`~mnemoflow.nodes.tme.state`: the state of one turn;
- :mod:`~mnemoflow.nodes.tme.agents`: what is said to the model and heard back, and the offline stand-in;
- :mod:`~mnemoflow.nodes.tme.forest`: the task forest and its rules (task-scoped steps, versions, dependencies,
  staleness, the parent's child-changed flag);
- :mod:`~mnemoflow.nodes.tme.prompt`: what the model is shown of the forest (current values; a check's history);
- :mod:`~mnemoflow.nodes.tme.turn`: the nodes of a turn;
- :mod:`~mnemoflow.nodes.tme.session`: one turn of a conversation at a time;
- :mod:`~mnemoflow.nodes.tme.measure`: what the evaluation measures.
"""
