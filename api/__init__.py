"""The HTTP API: validates, authorises, enqueues, reads results. Never runs training."""
