"""A small multi-agent team (``team.*``): a solver and a critic work in an environment for a bounded number of
rounds. Each proposal is an environment step (action, observation, reward; ``environment.py``) and the final check
gives the environment's verdict. It knows nothing of any memory: it reads ``memory`` (per-role text, empty by
default) and writes ``messages`` and ``steps``, which a memory mechanism around it may record."""
