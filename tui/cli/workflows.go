package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func (a *app) workflowsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "workflows", Aliases: []string{"workflow", "wf"}, Short: "Store, read and check workflows"}

	var file string
	push := &cobra.Command{
		Use:   "push -f FILE",
		Short: "Store a workflow as a new version (unchanged definitions keep their version)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError("push: -f FILE is required")
			}
			wf, err := a.readWorkflow(file)
			if err != nil {
				return err
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workflows.PutWorkflow(cmd.Context(), &casarev1.PutWorkflowRequest{Workflow: wf})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				state := "created"
				if !res.GetCreated() {
					state = "unchanged"
				}
				fmt.Fprintf(w, "workflow %s version %d %s\n", res.GetWorkflow().GetName(), res.GetWorkflow().GetVersion(), state)
			})
		},
	}
	push.Flags().StringVarP(&file, "file", "f", "", "workflow file, JSON or YAML (- for stdin)")

	var version int32
	get := &cobra.Command{
		Use:   "get NAME [--version N]",
		Short: "Show a stored workflow (-o yaml for the whole definition)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.workflows.GetWorkflow(cmd.Context(), &casarev1.GetWorkflowRequest{Name: args[0], Version: version})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetWorkflow(), func(w io.Writer) {
				v := res.GetWorkflow()
				fmt.Fprintf(w, "Name:\t%s\n", v.GetName())
				fmt.Fprintf(w, "Version:\t%d\n", v.GetVersion())
				fmt.Fprintf(w, "Description:\t%s\n", dash(v.GetWorkflow().GetDescription()))
				fmt.Fprintf(w, "Steps:\t%d\n", len(v.GetWorkflow().GetSteps()))
				fmt.Fprintf(w, "Digest:\t%s\n", v.GetDigest())
				fmt.Fprintf(w, "Created:\t%s by %s\n", formatTime(v.GetCreatedAt()), dash(v.GetCreatedBy()))
			})
		},
	}
	get.Flags().Int32Var(&version, "version", 0, "version (default the latest)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List stored workflows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListWorkflowsResponse{}
			req := &casarev1.ListWorkflowsRequest{PageSize: 1000}
			for {
				res, err := conn.workflows.ListWorkflows(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Workflows = append(out.Workflows, res.GetWorkflows()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tVERSION\tUPDATED\tDESCRIPTION")
				for _, wf := range out.GetWorkflows() {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", wf.GetName(), wf.GetLatestVersion(), formatTime(wf.GetUpdatedAt()), wf.GetDescription())
				}
			})
		},
	}

	validate := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a workflow file without a server; lists every problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wf, err := a.readWorkflow(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.env.Stdout, "%s: valid workflow %q with %d steps\n", args[0], wf.GetName(), len(wf.GetSteps()))
			return nil
		},
	}
	cmd.AddCommand(push, get, list, validate)
	return cmd
}
