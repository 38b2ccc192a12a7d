"""kopf handlers: parse the body into a model, call a service, write status. Nothing else."""
