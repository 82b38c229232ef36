package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/pki"
)

// writePair writes cert's chain and key as PEM files, each through a
// rename, as cert-manager and certbot replace them.
func writePair(t *testing.T, cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{certFile: chain, keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
}

// startTLS starts a control plane on loopback with cfg's TLS settings and
// returns it with its admin token.
func startTLS(t *testing.T, edit func(*Config)) (*Server, string) {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL, cfg.RedisURL = "", ""
	edit(&cfg)
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	token, err := os.ReadFile(filepath.Join(cfg.DataDir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return s, strings.TrimSpace(string(token))
}

// trusting returns a client that trusts roots, speaking the protocols
// given, on connections of its own.
func trusting(roots *x509.CertPool, http2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(!http2)
	tr.Protocols.SetHTTP2(http2)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestAPIOverTLS serves the API with --tls-cert and --tls-key: Connect,
// gRPC and gRPC-Web, /metrics and /health answer over HTTPS, HTTP/2 and
// HTTP/1.1 on the one port; replacing the files makes new connections see
// the new certificate without a restart.
func TestAPIOverTLS(t *testing.T) {
	ca, _, err := pki.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first, err := ca.ServerCertificate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writePair(t, first, certFile, keyFile)
	s, token := startTLS(t, func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	base := "https://" + s.Addr()
	ctx := context.Background()

	for name, tc := range map[string]struct {
		client *http.Client
		opts   []connecthttp.Option
		proto  int
	}{
		"connect over HTTP/1.1": {trusting(roots, false), nil, 1},
		"connect over HTTP/2":   {trusting(roots, true), nil, 2},
		"grpc":                  {trusting(roots, true), []connecthttp.Option{connecthttp.WithGRPC()}, 2},
		"grpc-web":              {trusting(roots, false), []connecthttp.Option{connecthttp.WithGRPCWeb()}, 1},
	} {
		admin := casarev1connect.NewAdminServiceClient(connect.NewClient(connecthttp.NewTransport(tc.client, base, tc.opts...), bearerToken(token)))
		who, err := admin.WhoAmI(ctx, &casarev1.WhoAmIRequest{})
		if err != nil || who.GetRole() != casarev1.Role_ROLE_ADMIN {
			t.Errorf("%s: WhoAmI = %v, %v", name, who, err)
		}
	}
	for _, path := range []string{"/metrics", "/health/live", "/health/ready"} {
		for _, http2 := range []bool{false, true} {
			res, err := trusting(roots, http2).Get(base + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || (res.ProtoMajor == 2) != http2 {
				t.Errorf("GET %s (HTTP/2 %v): %s over %s", path, http2, res.Status, res.Proto)
			}
		}
	}
	if err := CheckHealth(ctx, s.Addr(), "/health/live", true); err != nil {
		t.Errorf("casare-server health over TLS: %v", err)
	}
	// A plain-HTTP client gets no API.
	if res, err := http.Get("http://" + s.Addr() + "/health/live"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered 200 on the TLS port")
		}
	}

	served := func() []byte {
		conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: roots})
		if err != nil {
			return nil
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	if got := served(); !slices.Equal(got, first.Certificate[0]) {
		t.Fatalf("the port serves a certificate other than --tls-cert")
	}
	second, err := ca.ServerCertificate([]string{"127.0.0.1"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The stat is cached for a second; a file written within the same
	// second as the first could keep its time on a coarse file system.
	time.Sleep(statEvery)
	writePair(t, second, certFile, keyFile)
	waitFor(t, "new connections see the replaced certificate", func() bool {
		return slices.Equal(served(), second.Certificate[0])
	})
}

// TestCertReloaderKeepsTheLastGoodPair: a pair half replaced (a broken
// certificate file) keeps the certificate served until both are good.
func TestCertReloaderKeepsTheLastGoodPair(t *testing.T) {
	ca, _, err := pki.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first, _ := ca.ServerCertificate([]string{"localhost"}, time.Hour)
	writePair(t, first, certFile, keyFile)
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	if err := os.WriteFile(certFile, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * statEvery)
	got, _ := r.GetCertificate(nil)
	if !slices.Equal(got.Certificate[0], first.Certificate[0]) {
		t.Fatalf("a broken file replaced the certificate")
	}
	second, _ := ca.ServerCertificate([]string{"localhost"}, 2*time.Hour)
	writePair(t, second, certFile, keyFile)
	now = now.Add(2 * statEvery)
	if got, _ := r.GetCertificate(nil); !slices.Equal(got.Certificate[0], second.Certificate[0]) {
		t.Fatalf("the good pair was not loaded")
	}
	if _, err := newCertReloader(filepath.Join(dir, "missing.crt"), keyFile, slog.Default()); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("a missing file: %v, want an error naming --tls-cert", err)
	}
}

// TestSelfSignedAPI: --tls-self-signed serves a certificate of the
// control plane's CA for loopback and --tls-san; a client trusting ca.crt
// connects, one that does not gets an x509 error.
func TestSelfSignedAPI(t *testing.T) {
	var dataDir string
	s, _ := startTLS(t, func(c *Config) {
		c.TLSSelfSigned, c.TLSSANs = true, []string{"api.example.test"}
		dataDir = c.DataDir
	})
	pemCA, err := os.ReadFile(filepath.Join(dataDir, pki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCA)
	res, err := trusting(roots, true).Get("https://" + s.Addr() + "/health/live")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	leaf := res.TLS.PeerCertificates[0]
	for _, name := range []string{"localhost", "api.example.test"} {
		if !slices.Contains(leaf.DNSNames, name) {
			t.Errorf("the certificate names %v, missing %s", leaf.DNSNames, name)
		}
	}
	_, err = trusting(x509.NewCertPool(), false).Get("https://" + s.Addr() + "/health/live")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("a client without the CA: %v, want an x509 unknown authority error", err)
	}
}

func TestTLSConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"CertWithoutKey", func(c *Config) { c.TLSCert = "a.crt" }, "--tls-cert and --tls-key"},
		{"BothWays", func(c *Config) { c.TLSCert, c.TLSKey, c.TLSSelfSigned = "a", "b", true }, "--tls-self-signed"},
		{"SANWithoutSelfSigned", func(c *Config) { c.TLSSANs = []string{"x"} }, "--tls-san"},
		{"BadSAN", func(c *Config) { c.TLSSelfSigned, c.TLSSANs = true, []string{"a b"} }, "--tls-san"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := ConfigFromEnv()
			tc.edit(&cfg)
			if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
