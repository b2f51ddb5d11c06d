"""A small multi-agent team (``team.*``): a solver and a critic exchange messages for a bounded number of rounds,
then an environment check decides success. It knows nothing of any memory: it reads ``memory`` (per-role text,
empty by default) and writes ``messages``, which a memory mechanism around it may record."""
