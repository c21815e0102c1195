"""The thin web login that consumes temporary passwords set by phone, and the account pages."""
