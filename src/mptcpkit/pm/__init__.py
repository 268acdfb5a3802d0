"""mptcpkit.pm."""
