"""The AMI listener: follows channels live, reconnects when Asterisk restarts."""
