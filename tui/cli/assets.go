package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// assetTypes are the types as users type them.
var assetTypes = []string{"text", "number", "bool", "json", "secret", "credential"}

func assetType(t casarev1.AssetType) string {
	return strings.ToLower(shortEnum(t.String(), "ASSET_TYPE_"))
}

func parseAssetType(s string) (casarev1.AssetType, error) {
	t, ok := casarev1.AssetType_value["ASSET_TYPE_"+strings.ToUpper(s)]
	if !ok || t == 0 || s != strings.ToLower(s) {
		return 0, usageError("--type: unknown type %q: use %s", s, strings.Join(assetTypes, ", "))
	}
	return casarev1.AssetType(t), nil
}

// readSecret reads a value from stdin, without the line end a shell's echo
// or a here-string adds.
func (a *app) readSecret(flag string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(a.env.Stdin, 64<<10+2))
	if err != nil {
		return "", usageError("%s: read stdin: %v", flag, err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", usageError("%s: stdin is empty", flag)
	}
	return s, nil
}

func (a *app) assetsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "assets", Aliases: []string{"asset"}, Short: "Manage assets and credentials workflows read as ${{ assets.NAME }} and ${{ credentials.NAME.password }}"}

	var typeName, value, username, selector string
	var valueStdin, passwordStdin bool
	set := &cobra.Command{
		Use:   "set NAME [--type text|number|bool|json|secret|credential] [--value V | --value-stdin] [--username U --password-stdin] [--for k=v,…]",
		Short: "Create or replace an asset's value, or with --for its override for robots with those labels",
		Long: "set stores an asset. Secrets and credentials are sealed on the server and never shown\n" +
			"again; pass them on stdin (--value-stdin, --password-stdin) so they stay out of the\n" +
			"shell history. With --for, the value is an override for robots that have all the\n" +
			"labels; the override matching the most labels wins.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if typeName == "" {
				typeName = "text"
				if passwordStdin || username != "" {
					typeName = "credential"
				}
			}
			t, err := parseAssetType(typeName)
			if err != nil {
				return err
			}
			if valueStdin && passwordStdin {
				return usageError("--value-stdin and --password-stdin: stdin holds one of them")
			}
			in := &casarev1.AssetInput{Name: args[0], Type: t, Value: value, Username: username, Selector: selector}
			if valueStdin {
				if in.Value, err = a.readSecret("--value-stdin"); err != nil {
					return err
				}
			}
			if passwordStdin {
				if in.Password, err = a.readSecret("--password-stdin"); err != nil {
					return err
				}
			}
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.assets.PutAsset(cmd.Context(), &casarev1.PutAssetRequest{Asset: in})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				what := "asset " + res.GetAsset().GetName()
				if s := res.GetAsset().GetSelector(); s != "" {
					what += " for " + s
				}
				verb := "updated"
				if res.GetCreated() {
					verb = "created"
				}
				fmt.Fprintf(w, "%s %s (%s)\n", what, verb, assetType(res.GetAsset().GetType()))
			})
		},
	}
	set.Flags().StringVar(&typeName, "type", "", "text, number, bool, json, secret or credential (default text, or credential with --username or --password-stdin)")
	set.Flags().StringVar(&value, "value", "", "the value (for a secret prefer --value-stdin)")
	set.Flags().BoolVar(&valueStdin, "value-stdin", false, "read the value from stdin")
	set.Flags().StringVar(&username, "username", "", "a credential's username")
	set.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read a credential's password from stdin")
	set.Flags().StringVar(&selector, "for", "", "labels k=v,… of the robots this value is for (an override)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List assets and their overrides; secret values and passwords show as ***",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			out := &casarev1.ListAssetsResponse{}
			req := &casarev1.ListAssetsRequest{PageSize: 1000}
			for {
				res, err := conn.assets.ListAssets(cmd.Context(), req)
				if err != nil {
					return a.apiError(err)
				}
				out.Assets = append(out.Assets, res.GetAssets()...)
				if res.GetNextPageToken() == "" {
					break
				}
				req.PageToken = res.GetNextPageToken()
			}
			return a.print(out, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tTYPE\tFOR\tVALUE\tUSERNAME\tUPDATED\tBY")
				for _, as := range out.GetAssets() {
					printAssetRow(w, as)
				}
			})
		},
	}

	var forRobot string
	get := &cobra.Command{
		Use:   "get NAME [--for-robot ROBOT]",
		Short: "Show an asset with its overrides, and with --for-robot the value that robot gets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.assets.GetAsset(cmd.Context(), &casarev1.GetAssetRequest{Name: args[0], ForRobot: forRobot})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tTYPE\tFOR\tVALUE\tUSERNAME\tUPDATED\tBY")
				if res.GetAsset() != nil {
					printAssetRow(w, res.GetAsset())
				}
				for _, o := range res.GetOverrides() {
					printAssetRow(w, o)
				}
				if forRobot == "" {
					return
				}
				r := res.GetResolved()
				switch {
				case r == nil:
					fmt.Fprintf(w, "\nrobot %s gets no value: no override matches its labels and there is no default\n", forRobot)
				case r.GetSelector() == "":
					fmt.Fprintf(w, "\nrobot %s gets the default: %s\n", forRobot, assetShown(r))
				default:
					fmt.Fprintf(w, "\nrobot %s gets the override for %s: %s\n", forRobot, r.GetSelector(), assetShown(r))
				}
			})
		},
	}
	get.Flags().StringVar(&forRobot, "for-robot", "", "robot id or name: show the value it gets")

	var deleteFor string
	del := &cobra.Command{
		Use:   "delete NAME [--for k=v,…]",
		Short: "Delete an asset with its overrides, or with --for one override",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := a.connect()
			if err != nil {
				return err
			}
			res, err := conn.assets.DeleteAsset(cmd.Context(), &casarev1.DeleteAssetRequest{Name: args[0], Selector: deleteFor})
			if err != nil {
				return a.apiError(err)
			}
			return a.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "asset %s: %d value(s) deleted\n", args[0], res.GetDeleted())
			})
		},
	}
	del.Flags().StringVar(&deleteFor, "for", "", "delete only the override for these labels")

	cmd.AddCommand(set, list, get, del)
	return cmd
}

func printAssetRow(w io.Writer, as *casarev1.Asset) {
	selector := as.GetSelector()
	if selector == "" {
		selector = "-"
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", as.GetName(), assetType(as.GetType()), selector, dashIfEmpty(assetValue(as)),
		dashIfEmpty(as.GetUsername()), formatTime(as.GetUpdatedAt()), as.GetUpdatedBy())
}

// assetValue is what the table shows as the value: a credential's is its
// masked password.
func assetValue(as *casarev1.Asset) string {
	if as.GetType() == casarev1.AssetType_ASSET_TYPE_CREDENTIAL {
		return as.GetPassword()
	}
	v := as.GetValue()
	if len(v) > 60 {
		v = v[:60] + "…"
	}
	return v
}

func assetShown(as *casarev1.Asset) string {
	if as.GetType() == casarev1.AssetType_ASSET_TYPE_CREDENTIAL {
		return "username " + as.GetUsername() + ", password " + as.GetPassword()
	}
	return assetValue(as)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
