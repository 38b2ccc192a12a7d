"""The K3s stand-in: installer script, `k3s` binary stand-in, and the clusters behind them."""
