"""The `pfsync` command line: the service's processes, a one-command development stack, and operator tools."""
