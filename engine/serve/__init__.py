"""``flowyard serve``: events as they happen.

Webhooks in through a durable inbox, flows on their schedules, metrics and alerts, in one
process (docs/serve.md):

- ``signatures.py``: Shopify, WooCommerce and Standard Webhooks signatures, verified over
  the raw body in constant time;
- ``intake.py``: one delivery in, one answer out, the event committed before a 2xx;
- ``inbox.py``: the group-committing writer of accepted events, and the feed a run takes
  them from (claimed per event, marked done with their records);
- ``scheduler.py``: cron expressions (croniter) in a time zone, one process per slot;
- ``metrics.py``: Prometheus metrics, served and as a textfile for cron users;
- ``alerts.py``: failed runs, dead letters, review items and overdue flows, batched and
  rate-limited, by a JSON POST and by e-mail;
- ``options.py``, ``server.py``, ``app.py``: the options, the service and its ASGI app.

Nothing here is imported by ``import engine`` until it is used: a CLI command that serves
nothing pays nothing for the server's libraries.
"""
