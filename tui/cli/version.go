package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Build says which build of casarectl runs; cmd/casarectl sets it.
type Build struct {
	Version   string
	Revision  string
	GoVersion string
}

func (b Build) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", dash(b.Version), dash(b.Revision), dash(b.GoVersion))
}

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version [--client]",
		Short: "Show the version of casarectl and of the control plane it talks to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := a.env.Build
			out := map[string]any{"client": map[string]any{
				"version": client.Version, "revision": client.Revision, "goVersion": client.GoVersion,
			}}
			var server *casarev1.GetVersionResponse
			var serverURL string
			if !clientOnly {
				conn, err := a.connect()
				if err != nil {
					return err
				}
				serverURL = conn.server
				if server, err = conn.admin.GetVersion(cmd.Context(), &casarev1.GetVersionRequest{}); err != nil {
					// The client's version is still worth seeing when the
					// server cannot answer: it may be why.
					fmt.Fprintf(a.env.Stdout, "Client:\tcasarectl %s\n", client)
					return a.apiError(err)
				}
				raw, _ := protojson.Marshal(server)
				var m map[string]any
				if err := json.Unmarshal(raw, &m); err != nil {
					return &exitError{code: ExitError, err: err}
				}
				m["server"] = serverURL
				out["server"] = m
			}
			msg, err := structpb.NewStruct(out)
			if err != nil {
				return &exitError{code: ExitError, err: err}
			}
			return a.print(msg, func(w io.Writer) {
				fmt.Fprintf(w, "Client:\tcasarectl %s\n", client)
				if server != nil {
					fmt.Fprintf(w, "Server:\tcasare-server %s (revision %s, %s) at %s\n", server.GetVersion(), server.GetRevision(), server.GetGoVersion(), serverURL)
					fmt.Fprintf(w, "Robot protocol:\t%d to %d\n", server.GetMinProtocolVersion(), server.GetMaxProtocolVersion())
				}
			})
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "show only casarectl's version, without asking the server")
	return cmd
}
