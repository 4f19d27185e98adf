"""Front doors: the ways spans reach the bridge's engine."""
