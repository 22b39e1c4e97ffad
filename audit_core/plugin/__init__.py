"""The plugin machinery and the plugin interfaces: hook specs, the plugin manager, registration by
reference, the factory, the plugin boundary (guard), and the Attack, Target and Generator base
classes. Imports only :mod:`audit_core.data` and :mod:`audit_core.base`."""
