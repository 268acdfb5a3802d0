"""mptcpkit.pm.plugins."""
