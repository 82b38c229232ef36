package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"connectrpc.com/connect/v2/connectproto"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpcreflect/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/rpc/grpc/health/v1/healthv1connect"
	"github.com/casarerpa/casare/server/api"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/trigger"
)

// newHTTPServer builds the one HTTP port: the API (Connect, gRPC and
// gRPC-Web over HTTP/1.1 and h2c), gRPC health and reflection, /metrics and
// the /health/* probes.
func (s *Server) newHTTPServer() *http.Server {
	validator, err := protovalidate.New()
	if err != nil {
		// Only fails on invalid options; there are none.
		panic(err)
	}
	apiServer := connect.NewServer(
		api.Recover(s.logger),
		s.rpcMetrics(),
		api.Log(s.logger),
		s.auth.Interceptor(),
		api.Validate(validator),
	)
	services := api.New(api.Options{
		Registry:           s.reg,
		Jobs:               s.jobs,
		Queue:              s.queue,
		Auth:               s.auth,
		Logger:             s.logger,
		DefaultMaxAttempts: s.cfg.DefaultMaxAttempts,
		Enrollment:         s.gateway,
		Robots:             s.gateway,
		JobChanges:         s.jobChanges,
		JobLogs:            s.jobLogs,
		Dispatch:           s.dispatcher,
		RobotStaleAfter:    gateway.StaleAfter(s.cfg.HeartbeatInterval),
		Version:            s.cfg.Build.version(),
		Revision:           s.cfg.Build.revision(),
		Deliveries:         s.events,
		Vault:              s.vault,
		QueueTriggers:      s.queueTriggers,
	})
	s.services = services
	services.Register(apiServer)

	// Health and reflection answer without a token: probes and grpcurl
	// carry none, and neither reveals more than the published schema.
	public := connect.NewServer(api.Recover(s.logger))
	healthv1connect.RegisterHealthHandler(public, api.NewHealth(s.ready, serviceNames(apiServer)...))
	grpcreflect.Register(public, grpcreflect.WithNamer(grpcreflect.NamerFunc(func() []string {
		return slices.Concat(serviceNames(apiServer), serviceNames(public))
	})))

	mux := http.NewServeMux()
	connecthttp.Mount(mux, apiServer,
		connecthttp.WithReadMaxBytes(s.cfg.MaxRequestBytes),
		// Compressing a few hundred bytes costs more CPU than it saves on
		// the wire; lists and definitions are worth it.
		connecthttp.WithCompressMinBytes(4096),
		connecthttp.WithCodecs(binaryCodec(), strictJSONCodec()),
	)
	connecthttp.Mount(mux, public)
	// Webhook triggers answer without an API token: each request carries
	// its trigger's signature or bearer token instead.
	mux.Handle(trigger.Pattern, trigger.New(trigger.Options{
		Store:        s.reg,
		Jobs:         services,
		Logger:       s.logger,
		Metrics:      s.metrics,
		DefaultRate:  s.cfg.TriggerRate,
		MaxBodyBytes: s.cfg.TriggerBodyLimit(),
	}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /health/ready", s.serveReady)

	var handler http.Handler = mux
	// Connect bounds each message; this bounds the whole body, so a client
	// streaming an endless request cannot hold the server either.
	handler = http.MaxBytesHandler(handler, int64(s.cfg.MaxRequestBytes)*2)
	if len(s.cfg.CORSOrigins) > 0 {
		handler = cors.New(cors.Options{
			AllowedOrigins: s.cfg.CORSOrigins,
			AllowedMethods: connectcors.AllowedMethods(),
			AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
			ExposedHeaders: connectcors.ExposedHeaders(),
			MaxAge:         7200,
		}).Handler(handler)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           handler,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: watch and log streams stay open for hours.
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	// Streams stay open until their clients leave; a graceful shutdown
	// ends them at once so that it waits only for unary calls.
	srv.RegisterOnShutdown(services.EndStreams)
	return srv
}

// strictJSONCodec rejects unknown JSON fields: a misspelt field in a
// hand-written request is a mistake to report, not to ignore.
func strictJSONCodec() *connectproto.JSONCodec {
	codec := connectproto.NewJSONCodec()
	codec.UnmarshalOptions.DiscardUnknown = false
	// Thousands of nested steps cost more to decode than to refuse.
	codec.UnmarshalOptions.RecursionLimit = workflow.MaxMessageDepth
	return codec
}

// binaryCodec decodes binary requests with the same recursion limit.
func binaryCodec() *connectproto.BinaryCodec {
	codec := connectproto.NewBinaryCodec()
	codec.UnmarshalOptions.RecursionLimit = workflow.MaxMessageDepth
	return codec
}

// serviceNames lists the services registered on server, from procedures
// like /casare.v1.JobService/SubmitJob.
func serviceNames(server *connect.Server) []string {
	var names []string
	for spec := range server.Specs() {
		name := strings.TrimPrefix(spec.Procedure[:strings.LastIndex(spec.Procedure, "/")], "/")
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
