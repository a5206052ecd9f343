"""What travels between client, API and worker: tensor forms and codecs, the session call protocol."""
