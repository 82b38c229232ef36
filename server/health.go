package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// CheckHealth asks the control plane listening on httpAddr (as given to
// --http-addr) for path, /health/live or /health/ready, and returns nil
// when it answers 200. It exists so that images without a shell or curl
// (distroless, scratch) can still have a HEALTHCHECK: the binary checks
// itself. An unspecified host (0.0.0.0, [::], empty) is reached on
// loopback. With useTLS it asks over HTTPS without checking the
// certificate: it asks whether the process on its own port is alive, not
// who it is, and the certificate may name no address it can dial.
func CheckHealth(ctx context.Context, httpAddr, path string, useTLS bool) error {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: want host:port, got %q", httpAddr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	scheme, client := "http", http.DefaultClient
	if useTLS {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		scheme, client = "https", &http.Client{Transport: transport}
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + path
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health %s: %w", url, err)
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health %s: %w", url, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("health %s: %s: %s", url, res.Status, body)
	}
	return nil
}
