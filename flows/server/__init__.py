"""The webhook receiver and web UI served by `mnemoflow serve`."""
