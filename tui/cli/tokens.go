package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func role(r casarev1.Role) string {
	return strings.ToLower(shortEnum(r.String(), "ROLE_"))
}

func (a *app) tokensCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Aliases: []string{"token"}, Short: "Manage API tokens (admin)"}

	var name, roleName string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --name NAME --role admin|operator|viewer [--ttl D]",
		Short: "Create an API token; its secret is shown only once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, ok := casarev1.Role_value["ROLE_"+strings.ToUpper(roleName)]
			if !ok || r == 0 {
				return usageError("--role: want admin, operator or viewer, got %q", roleName)
			}
			req := &casarev1.CreateTokenRequest{Name: name, Role: casarev1.Role(r)}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.admin.CreateToken(cmd.Context(), req)
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, res.GetToken())
				fmt.Fprintf(a.env.Stderr, "token %q (%s) created; store it now, it is not shown again\n", res.GetInfo().GetName(), role(res.GetInfo().GetRole()))
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "name of the token (required)")
	create.Flags().StringVar(&roleName, "role", "", "admin, operator or viewer (required)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default: does not expire)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")

	var includeRevoked bool
	list := &cobra.Command{
		Use:   "list [--all]",
		Short: "List API tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListTokensResponse{}
			req := &casarev1.ListTokensRequest{PageSize: 1000, IncludeRevoked: includeRevoked}
			for {
				res, err := conn.admin.ListTokens(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Tokens = append(out.Tokens, res.GetTokens()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tID\tROLE\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
				for _, t := range out.GetTokens() {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetId(), role(t.GetRole()), formatTime(t.GetCreatedAt()),
						formatTime(t.GetExpiresAt()), formatTime(t.GetLastUsedAt()), formatTime(t.GetRevokedAt()))
				}
			})
		},
	}
	list.Flags().BoolVar(&includeRevoked, "all", false, "include revoked tokens")

	revoke := &cobra.Command{
		Use:   "revoke ID_OR_NAME",
		Short: "Revoke an API token at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.admin.RevokeToken(cmd.Context(), &casarev1.RevokeTokenRequest{Id: args[0]})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res.GetToken(), func(w io.Writer) {
				fmt.Fprintf(w, "token %s (%s) revoked\n", res.GetToken().GetName(), res.GetToken().GetId())
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (a *app) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the token casarectl uses and its role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.admin.WhoAmI(cmd.Context(), &casarev1.WhoAmIRequest{})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "Name:\t%s\nRole:\t%s\nToken ID:\t%s\nServer:\t%s\n", res.GetName(), role(res.GetRole()), res.GetTokenId(), conn.server)
			})
		},
	}
}
