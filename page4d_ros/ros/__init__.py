"""The rclpy adapter: node, conversions, parameters, diagnostics."""
