// Never compiled: this manifest exists only so cargo resolves and verifies the pinned source.
