"""The service's clients: the typed HTTP client (`GaitluClient`), dataset enrollment (through the service,
or in this process through the engine with `--offline`) and the `gaitlu enroll / search / galleries`
commands."""
