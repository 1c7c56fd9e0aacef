"""What every process of one bot shares through Redis: flood control, rate limits, /stop."""
