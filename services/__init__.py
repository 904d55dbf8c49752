"""Herald's services: the shared runtime (core), the four gRPC services and the provider sandboxes."""
