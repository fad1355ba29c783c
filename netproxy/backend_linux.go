package netproxy

func newBackend(cfg Config) (backend, error) {
	if cfg.Mode == ModeUserspace {
		return newUserspaceBackend(cfg), nil
	}
	return newNFTBackend(cfg), nil
}
