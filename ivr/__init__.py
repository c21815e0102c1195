"""The temporary-password IVR: FastAGI daemon, AMI listener, lab and operators' CLI."""
