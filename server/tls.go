package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/casarerpa/casare/server/pki"
)

// selfSignedValidity is how long the API certificate --tls-self-signed
// issues lasts; a new one is issued on every start.
const selfSignedValidity = 365 * 24 * time.Hour

// statEvery is how often a handshake looks at the certificate files: a
// stat per handshake would cost a busy port two system calls each.
const statEvery = time.Second

// apiTLSConfig returns the TLS configuration of the API port, or nil when
// it serves plain HTTP.
func apiTLSConfig(cfg Config, ca *pki.CA, logger *slog.Logger) (*tls.Config, error) {
	switch {
	case cfg.TLSCert != "":
		r, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, logger)
		if err != nil {
			return nil, err
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}, nil
	case cfg.TLSSelfSigned:
		hosts := apiHosts(cfg.HTTPAddr, cfg.TLSSANs)
		cert, err := ca.ServerCertificate(hosts, selfSignedValidity)
		if err != nil {
			return nil, fmt.Errorf("--tls-self-signed: %w", err)
		}
		logger.Info("issued the API a certificate from the control plane's CA", "names", hosts)
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
	}
	return nil, nil
}

// apiHosts are the names a self-signed API certificate holds: loopback,
// the host of --http-addr when it names one, and the extra names given.
func apiHosts(httpAddr string, extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(httpAddr); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	hosts = append(hosts, extra...)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// certReloader serves the certificate in a pair of files and loads them
// again when they change, so that a renewed certificate (cert-manager,
// certbot) reaches new connections without a restart. A pair that cannot
// be loaded (one file written, the other not yet) keeps the last good one.
type certReloader struct {
	certFile, keyFile string
	logger            *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
}

// fileStamp is what tells a file changed: its modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

// newCertReloader loads the pair; an error names the flag at fault.
func newCertReloader(certFile, keyFile string, logger *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, logger: logger, now: time.Now}
	stamp, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert and --tls-key: %w", err)
	}
	r.cert, r.stamp, r.checked = &cert, stamp, r.now()
	return r, nil
}

func (r *certReloader) stat() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, f := range []struct{ flag, path string }{{"--tls-cert", r.certFile}, {"--tls-key", r.keyFile}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return out, fmt.Errorf("%s: %w", f.flag, err)
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// GetCertificate is tls.Config.GetCertificate: it gives the current
// certificate, loading the files again first when they changed since the
// last look, at most once per statEvery.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < statEvery {
		return r.cert, nil
	}
	r.checked = now
	stamp, err := r.stat()
	if err != nil || stamp == r.stamp {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Half written: try again at the next look.
		r.logger.Warn("API certificate files changed but cannot be loaded; serving the previous certificate", "cert", r.certFile, "err", err)
		return r.cert, nil
	}
	r.cert, r.stamp = &cert, stamp
	r.logger.Info("API certificate reloaded", "cert", r.certFile)
	return r.cert, nil
}
