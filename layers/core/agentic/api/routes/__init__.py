"""Routers per resource: ``tasks`` (create/list/status), ``stream`` (execute/events), ``health``."""
