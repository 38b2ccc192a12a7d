"""kopf handlers: parse the body into a model, call a service, write status. Nothing else.

Importing a handler module registers nothing: the runner calls each module's ``register`` with its
registry.
"""
