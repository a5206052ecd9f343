"""The ``gradserve`` command: runs the API, workers and (when none is configured) an embedded Redis."""
