"""The test suite's helpers, one module each (fixtures are registered in tests/conftest.py):

- ``files``: where the repository is; flows, NDJSON and orders a test writes
- ``cli``: the command line in this process (``invoke``) or as a real process (``flowyard``)
- ``target``: a fault-injecting HTTP target, in a thread or its own process
- ``local_server``: a small HTTP server with answers per route, for the connector tests
- ``tryton``: a real Tryton ERP (a pytest plugin: ``pytest_plugins = ["tests.support.tryton"]``)
- ``flows``: the shipped retail flows run against that ERP, and the ERP read back
- ``webshop``, ``graphql_shop``: the example web shops the flows talk to
- ``system``: programs of the operating system (a browser): found, or installed from their
  Debian package when the test runs as root with apt-get (CI), else the test skipped
"""
