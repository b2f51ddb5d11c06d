"""L2MAC: long outputs built instruction by instruction over a versioned file store (``l2mac.*``)."""
