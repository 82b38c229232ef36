package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	server    string
	token     string
	jobs      casarev1connect.JobServiceClient
	workflows casarev1connect.WorkflowServiceClient
	robots    casarev1connect.RobotServiceClient
	admin     casarev1connect.AdminServiceClient
	assets    casarev1connect.AssetServiceClient
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
	client := connect.NewClient(connecthttp.NewTransport(a.env.HTTPClient, server), bearer(token))
	a.conn = connection{
		server:    server,
		token:     token,
		jobs:      casarev1connect.NewJobServiceClient(client),
		workflows: casarev1connect.NewWorkflowServiceClient(client),
		robots:    casarev1connect.NewRobotServiceClient(client),
		admin:     casarev1connect.NewAdminServiceClient(client),
		assets:    casarev1connect.NewAssetServiceClient(client),
	}
	return &a.conn, nil
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

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
