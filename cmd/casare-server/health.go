package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/casarerpa/casare/server"
)

// newHealthCommand checks a running control plane over its own HTTP port,
// for container HEALTHCHECKs in images that have no shell or curl.
func newHealthCommand(cfg *server.Config) *cobra.Command {
	var ready bool
	cmd := &cobra.Command{
		Use:   "health [--ready]",
		Short: "Check the control plane on --http-addr: exit 0 when /health/live (or /health/ready) answers 200",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/health/live"
			if ready {
				path = "/health/ready"
			}
			if err := server.CheckHealth(cmd.Context(), cfg.HTTPAddr, path, cfg.TLSCert != "" || cfg.TLSSelfSigned); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "check /health/ready (database, Redis and schema) instead of /health/live")
	return cmd
}
