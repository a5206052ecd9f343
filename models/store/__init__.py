"""Storage in Redis: every key name (``keys``), the connection (``redis``) and the job records (``jobs``)."""
