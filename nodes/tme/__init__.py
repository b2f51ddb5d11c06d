"""Task Memory Engine: a task forest per conversation, TRIM intents and revision propagation (``tme.*``)."""
