package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// DefaultServer is where casarectl looks for the control plane by default.
const DefaultServer = "http://127.0.0.1:8080"

// connection is the resolved server and the API clients for it.
type connection struct {
	server     string
	token      string
	jobs       casarev1connect.JobServiceClient
	workflows  casarev1connect.WorkflowServiceClient
	robots     casarev1connect.RobotServiceClient
	admin      casarev1connect.AdminServiceClient
	webhooks   casarev1connect.WebhookServiceClient
	schedules  casarev1connect.ScheduleServiceClient
	assets     casarev1connect.AssetServiceClient
	workqueues casarev1connect.WorkQueueServiceClient
}

// connect resolves the server and token, each from its flag, else the
// environment, else the context, else the default, and builds the clients.
func (a *app) connect() (*connection, error) {
	if a.conn.jobs != nil {
		return &a.conn, nil
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	name := a.contextFlag
	if name == "" {
		name = cfg.CurrentContext
	}
	ctxCfg := &Context{}
	if name != "" {
		c, ok := cfg.Contexts[name]
		if !ok {
			return nil, usageError("--context: no context named %q in %s", name, a.configPath())
		}
		ctxCfg = c
	}
	server := first(a.serverFlag, a.env.Getenv("CASARE_SERVER"), ctxCfg.Server, DefaultServer)
	token := first(a.tokenFlag, a.env.Getenv("CASARE_TOKEN"), ctxCfg.Token)
	server = strings.TrimRight(server, "/")
	if !strings.HasPrefix(server, "http://") && !strings.HasPrefix(server, "https://") {
		return nil, usageError("--server: want http://host:port or https://host, got %q", server)
	}
	httpClient := a.env.HTTPClient
	caFile := first(a.caFileFlag, a.env.Getenv("CASARE_CA_FILE"), ctxCfg.CAFile)
	insecure := a.insecureFlag || ctxCfg.InsecureSkipTLSVerify
	if strings.HasPrefix(server, "https://") && (caFile != "" || insecure) {
		if httpClient, err = tlsClient(httpClient, caFile, insecure); err != nil {
			return nil, err
		}
	}
	client := connect.NewClient(connecthttp.NewTransport(httpClient, server), bearer(token))
	a.conn = connection{
		server:     server,
		token:      token,
		jobs:       casarev1connect.NewJobServiceClient(client),
		workflows:  casarev1connect.NewWorkflowServiceClient(client),
		robots:     casarev1connect.NewRobotServiceClient(client),
		admin:      casarev1connect.NewAdminServiceClient(client),
		webhooks:   casarev1connect.NewWebhookServiceClient(client),
		schedules:  casarev1connect.NewScheduleServiceClient(client),
		assets:     casarev1connect.NewAssetServiceClient(client),
		workqueues: casarev1connect.NewWorkQueueServiceClient(client),
	}
	return &a.conn, nil
}

// tlsClient returns base with a transport that trusts the CA in caFile,
// or any certificate with insecure.
func tlsClient(base *http.Client, caFile string, insecure bool) (*http.Client, error) {
	tr, ok := base.Transport.(*http.Transport)
	if !ok || tr == nil {
		tr = http.DefaultTransport.(*http.Transport)
	}
	tr = tr.Clone()
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.TLSClientConfig != nil {
		conf = tr.TLSClientConfig.Clone()
	}
	if caFile != "" {
		pool, err := loadCAFile(caFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	conf.InsecureSkipVerify = insecure
	tr.TLSClientConfig = conf
	out := *base
	out.Transport = tr
	return &out, nil
}

// loadCAFile reads a PEM file of CA certificates.
func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError("--ca-file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, usageError("--ca-file: %s holds no PEM certificate", path)
	}
	return pool, nil
}

func first(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// bearer sends the token with every call.
func bearer(token string) connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if token != "" {
				if info, ok := connect.CallInfoForClientContext(ctx); ok {
					info.RequestHeader().Set("Authorization", "Bearer "+token)
				}
			}
			return next(ctx, spec)
		}
	}
}

// apiError turns an error from a call into what the user reads, with a
// hint where there is something to do about it. Exit code 2.
func (a *app) apiError(err error) error {
	if hint := tlsHint(err); hint != "" {
		return &exitError{code: ExitError, err: fmt.Errorf("cannot trust the server at %s: %v (%s)", a.conn.server, rootCause(err), hint)}
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, syscall.ECONNREFUSED) {
		return &exitError{code: ExitError, err: fmt.Errorf(
			"cannot reach the server at %s: %v (is casare-server running? set --server or CASARE_SERVER)", a.conn.server, rootCause(err))}
	}
	code := connect.CodeOf(err)
	msg := err.Error()
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		msg = cerr.Message()
	}
	text := strings.ReplaceAll(code.String(), "_", " ") + ": " + msg
	switch code {
	case connect.CodeUnauthenticated:
		if a.conn.token == "" {
			text += " (set --token or CASARE_TOKEN, or a context with casarectl config set-context)"
		}
	case connect.CodeUnavailable, connect.CodeUnknown:
		text = fmt.Sprintf("calling %s: %s", a.conn.server, text)
	}
	return &exitError{code: ExitError, err: errors.New(text)}
}

// tlsHint says what to do about a certificate the client cannot trust,
// or "" when err is not about one.
func tlsHint(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &hostname):
		return "the certificate does not name this host: connect by a name it holds, or have it issued for this one (--tls-san)"
	case errors.As(err, &unknown), errors.As(err, &verify):
		return "pass --ca-file with the CA that signed it (ca.crt of the server's data dir for --tls-self-signed), or --insecure-skip-tls-verify to trust any certificate"
	case errors.As(err, &invalid):
		return "the certificate is expired or not valid for a server"
	}
	return ""
}

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
