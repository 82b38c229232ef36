package server

import (
	"context"
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
// loopback.
func CheckHealth(ctx context.Context, httpAddr, path string) error {
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
	url := "http://" + net.JoinHostPort(host, port) + path
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health %s: %w", url, err)
	}
	res, err := http.DefaultClient.Do(req)
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
