package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/vault"
)

// SecretKeyFile is the name, in the data dir, of the key file the
// embedded default creates on first start.
const SecretKeyFile = "secret.key"

// KeySource returns where the vault's key-encryption keys come from:
// --secret-key-file, CASARE_SECRET_KEY, or secret.key in the data dir,
// which create allows making on first start.
func (c Config) KeySource(create bool) (vault.KeySource, error) {
	switch {
	case c.SecretKeyFile != "":
		return vault.File{Path: c.SecretKeyFile}, nil
	case c.SecretKey != "":
		return vault.Text{Name: "CASARE_SECRET_KEY", Value: c.SecretKey}, nil
	}
	path := filepath.Join(c.DataDir, SecretKeyFile)
	if create {
		if _, err := vault.CreateKeyFile(path); err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
	}
	return vault.File{Path: path}, nil
}

// OpenVault opens the vault on the registry's data keys with the keys the
// configuration names. With the wrong keys it fails, naming them, before
// anything is written.
func OpenVault(ctx context.Context, cfg Config, reg *registry.Registry, logger *slog.Logger, create bool) (*vault.Vault, error) {
	src, err := cfg.KeySource(create)
	if err != nil {
		return nil, err
	}
	v, err := vault.Open(ctx, src, reg.VaultStore())
	if errors.Is(err, vault.ErrWrongKey) {
		return nil, fmt.Errorf("the vault cannot be opened with the keys of %s; nothing was changed: %w", src, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open the vault (keys from %s): %w", src, err)
	}
	if logger != nil {
		logger.Info("vault open", "keys", src.String(), "sealing_key", v.KEKs()[0], "data_key", v.ActiveKey())
	}
	return v, nil
}

// RotateSecrets re-seals every data key under the first key of the
// configured source and every sealed value under a new data key.
func RotateSecrets(ctx context.Context, cfg Config, logger *slog.Logger) (vault.RotateResult, error) {
	reg, err := openRegistry(ctx, cfg, logger)
	if err != nil {
		return vault.RotateResult{}, err
	}
	defer reg.Close()
	v, err := OpenVault(ctx, cfg, reg, logger, false)
	if err != nil {
		return vault.RotateResult{}, err
	}
	return v.Rotate(ctx, registry.AssetSeals{R: reg}, registry.JobSecretSeals{R: reg})
}

// assetsGauge reports casare_assets{type}, counted from the registry at
// scrape time.
type assetsGauge struct {
	reg    *registry.Registry
	desc   *prometheus.Desc
	logger *slog.Logger
}

func newAssetsGauge(reg *registry.Registry, logger *slog.Logger) *assetsGauge {
	return &assetsGauge{reg: reg, logger: logger, desc: prometheus.NewDesc("casare_assets", "Assets stored, by type (an asset with overrides counts once).", []string{"type"}, nil)}
}

func (g *assetsGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *assetsGauge) Collect(ch chan<- prometheus.Metric) {
	counts, err := g.reg.CountAssets(context.Background())
	if err != nil {
		g.logger.Warn("count assets for metrics", "err", err)
		return
	}
	for _, t := range registry.AssetTypes {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(counts[t]), string(t))
	}
}
