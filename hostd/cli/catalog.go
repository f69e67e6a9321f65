package cli

// The catalog commands: directories (definitions, users, WorkSpaces registration), IP
// access control groups, bundles, images and tags. AWS's operations go through the SDK;
// what AWS keeps in Directory Service (definitions, users) and image registration are
// hostd's own operations (Deskhost.*).

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"go.yaml.in/yaml/v3"

	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"
	"deskhost/internal/strictyaml"
)

func jsonFlag(r *run, fs *flag.FlagSet) { fs.BoolVar(&r.json, "json", false, "print JSON") }

func init() {
	// Directory definitions (Directory Service's part).
	register(&command{name: "directory put", args: "--file DIR.yaml", summary: "define a directory or replace its definition (DNS name, alias, login settings, users)", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.file, "file", "", "the directory's definition, YAML: id, name, alias, login, users (required)")
		}, run: directoryPut})
	register(&command{name: "directory delete", args: "D_ID", summary: "delete a directory's definition (deregister it first)", minArgs: 1, maxArgs: 1, run: directoryDelete})
	register(&command{name: "directory show", args: "D_ID", summary: "show a directory's definition (secrets are never shown)", minArgs: 1, maxArgs: 1,
		flags: jsonFlag, run: directoryShow})
	register(&command{name: "directories", args: "", summary: "list the directories, registered or not", maxArgs: 0, flags: jsonFlag, run: directoriesList})
	register(&command{name: "directories register", args: "D_ID [--self-service]", summary: "register a directory with WorkSpaces: it gets a registration code", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.BoolVar(&r.selfService, "self-service", false, "enable the users' self-service permissions")
			fs.Var(&r.tags, "tag", "KEY=VALUE, a tag for the directory (repeatable)")
		}, run: directoriesRegister})
	register(&command{name: "directories deregister", args: "D_ID", summary: "deregister a directory (refused while it has WorkSpaces)", minArgs: 1, maxArgs: 1, run: directoriesDeregister})
	register(&command{name: "directories access", args: "D_ID [--allow TYPES] [--deny TYPES]", summary: "allow or deny client device types: windows, macos, linux, web, ios, android, chromeos, zeroclient", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.Var(&r.allow, "allow", "device types to allow, comma-separated (repeatable)")
			fs.Var(&r.deny, "deny", "device types to deny, comma-separated (repeatable)")
		}, run: directoriesAccess})

	// Users of a directory.
	register(&command{name: "users", args: "--directory D", summary: "list a directory's users", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.directory, "directory", "", "the directory (d-...), required")
			jsonFlag(r, fs)
		}, run: usersList})
	register(&command{name: "users add", args: "--directory D --user U [--email E] [--first F] [--last L]", summary: "add a user to a directory", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.directory, "directory", "", "the directory (d-...), required")
			fs.StringVar(&r.user, "user", "", "the user name, required")
			fs.StringVar(&r.email, "email", "", "the user's email address (a WorkSpace needs one)")
			fs.StringVar(&r.first, "first", "", "first name")
			fs.StringVar(&r.last, "last", "", "last name")
		}, run: usersAdd})
	register(&command{name: "users remove", args: "--directory D USER...", summary: "remove users from a directory (not while they have a WorkSpace)", minArgs: 1, maxArgs: -1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.directory, "directory", "", "the directory (d-...), required")
		}, run: usersRemove})

	// IP access control groups.
	ruleFlag := func(r *run, fs *flag.FlagSet) {
		fs.Var(&r.rules, "rule", "CIDR or address, optionally =DESCRIPTION, e.g. 203.0.113.0/24=HQ (repeatable)")
	}
	register(&command{name: "ipgroups", args: "", summary: "list the IP access control groups", maxArgs: 0, flags: jsonFlag, run: ipgroupsList})
	register(&command{name: "ipgroups create", args: "--name N [--description D] [--rule CIDR[=DESC]]...", summary: "create an IP access control group", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.name, "name", "", "the group's name, required")
			fs.StringVar(&r.description, "description", "", "the group's description")
			ruleFlag(r, fs)
		}, run: ipgroupsCreate})
	register(&command{name: "ipgroups delete", args: "WSIPG_ID", summary: "delete a group (disassociate it first)", minArgs: 1, maxArgs: 1, run: ipgroupsDelete})
	register(&command{name: "ipgroups authorize", args: "WSIPG_ID --rule CIDR[=DESC]...", summary: "add rules to a group", minArgs: 1, maxArgs: 1, flags: ruleFlag, run: ipgroupsRules})
	register(&command{name: "ipgroups update", args: "WSIPG_ID --rule CIDR[=DESC]...", summary: "replace a group's rules", minArgs: 1, maxArgs: 1, flags: ruleFlag, run: ipgroupsRules})
	register(&command{name: "ipgroups revoke", args: "WSIPG_ID CIDR...", summary: "remove rules from a group; sessions they allowed are cut", minArgs: 2, maxArgs: -1, run: ipgroupsRevoke})
	register(&command{name: "ipgroups associate", args: "D_ID WSIPG_ID...", summary: "associate groups with a directory", minArgs: 2, maxArgs: -1, run: ipgroupsAssociation})
	register(&command{name: "ipgroups disassociate", args: "D_ID WSIPG_ID...", summary: "disassociate groups from a directory", minArgs: 2, maxArgs: -1, run: ipgroupsAssociation})

	// Bundles and images.
	register(&command{name: "bundles create", args: "--name N --description D --image I --compute C --user-gib N [--root-gib N]", summary: "create a bundle from an image", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.name, "name", "", "the bundle's name: letters, digits and _ . / ( ) \\ - (required)")
			fs.StringVar(&r.description, "description", "", "its description (required)")
			fs.StringVar(&r.image, "image", "", "the image (wsi-...), required")
			fs.StringVar(&r.compute, "compute", "", "the compute type, e.g. VALUE, STANDARD (required)")
			fs.IntVar(&r.userGiB, "user-gib", 0, "user volume size in GiB (required)")
			fs.IntVar(&r.rootGiB, "root-gib", 0, "root volume size in GiB (default 80)")
			fs.BoolVar(&r.json, "json", false, "print JSON (AWS's WorkspaceBundle shape)")
		}, run: bundlesCreate})
	register(&command{name: "bundles update", args: "WSB_ID --image I", summary: "point a bundle at another image (new WorkSpaces use it)", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.image, "image", "", "the new image (wsi-...), required")
		}, run: bundlesUpdate})
	register(&command{name: "bundles delete", args: "WSB_ID", summary: "delete a bundle (queued while WorkSpaces use it)", minArgs: 1, maxArgs: 1, run: bundlesDelete})
	register(&command{name: "images", args: "", summary: "list the desktop images", maxArgs: 0, flags: jsonFlag, run: imagesList})
	register(&command{name: "images register", args: "--dir DIR [--id wsi-...] [--name N] [--description D]", summary: "add a desktop image directory built by imagebuild", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.dir, "dir", "", "the image directory (image.json beside kernel, initramfs and root), required")
			fs.StringVar(&r.id, "id", "", "the image id (default: a new one)")
			fs.StringVar(&r.name, "name", "", "the image's name (default: the manifest's)")
			fs.StringVar(&r.description, "description", "", "its description")
		}, run: imagesRegister})
	register(&command{name: "images delete", args: "WSI_ID", summary: "remove an image from the catalog (a registered directory stays; an image hostd made goes)", minArgs: 1, maxArgs: 1, run: imagesDelete})
	register(&command{name: "images create", args: "WS_ID --name N --description D", summary: "capture an AVAILABLE WorkSpace's root volume as a new image (sanitised)", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.name, "name", "", "the image's name, required")
			fs.StringVar(&r.description, "description", "", "its description, required")
		}, run: imagesCreate})
	register(&command{name: "images copy", args: "WSI_ID --name N [--description D]", summary: "copy an image on this host (a new id, the same content)", minArgs: 1, maxArgs: 1,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.name, "name", "", "the copy's name, required")
			fs.StringVar(&r.description, "description", "", "its description")
		}, run: imagesCopy})
	register(&command{name: "images import", args: "--source PATH|URL --name N --description D [--base WSI_ID]", summary: "import a qcow2 or raw Linux disk image (ext4 root, whole disk or partition) or an imagebuild image directory; it is test-booted before it is AVAILABLE", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.dir, "source", "", "an absolute path on the host, or an http(s) URL, required")
			fs.StringVar(&r.name, "name", "", "the image's name, required")
			fs.StringVar(&r.description, "description", "", "its description, required")
			fs.StringVar(&r.image, "base", "", "the image whose kernel and initramfs (the guest agent) the disk boots with (default: the newest registered)")
		}, run: imagesImport})

	// Tags.
	register(&command{name: "tags", args: "RESOURCE_ID", summary: "list a resource's tags (ws-, d-, wsb-, wsi-, wsipg-)", minArgs: 1, maxArgs: 1, flags: jsonFlag, run: tagsList})
	register(&command{name: "tags add", args: "RESOURCE_ID KEY=VALUE...", summary: "add or change tags", minArgs: 2, maxArgs: -1, run: tagsAdd})
	register(&command{name: "tags remove", args: "RESOURCE_ID KEY...", summary: "remove tags", minArgs: 2, maxArgs: -1, run: tagsRemove})
}

func (r *run) done(format string, args ...any) int {
	fmt.Fprintf(r.stdout, format+"\n", args...)
	return exitOK
}

func (r *run) sdk() (*hostdclient.Client, int) {
	c, err := r.client()
	if err != nil {
		return nil, r.usageError("%v", err)
	}
	return c, exitOK
}

// --- directories ---

func directoryPut(r *run) int {
	if r.file == "" {
		return r.usageError("--file is required")
	}
	b, err := os.ReadFile(r.file)
	if err != nil {
		return r.failf("%v", err)
	}
	// Checked here first, so that a mistake names its line in the file.
	var d catalog.Directory
	if err := strictyaml.Decode(b, &d); err != nil {
		return r.failf("%s: %v", r.file, err)
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.PutDirectory(r.ctx, &hostdclient.PutDirectoryInput{Definition: string(b)})
	if err != nil {
		return r.fail(err)
	}
	if out.Created {
		return r.done("%s: directory defined; register it with WorkSpaces: %s directories register %s", out.DirectoryId, prog, out.DirectoryId)
	}
	return r.done("%s: definition replaced", out.DirectoryId)
}

func directoryDelete(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if err := c.DeleteDirectory(r.ctx, &hostdclient.DirectoryIDInput{DirectoryId: r.args[0]}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: deleted", r.args[0])
}

func (r *run) describeDirectories(ids []string) ([]hostdclient.Directory, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	out, err := c.DescribeDirectories(r.ctx, &hostdclient.DescribeDirectoriesInput{DirectoryIds: ids})
	if err != nil {
		return nil, err
	}
	return out.Directories, nil
}

func directoryShow(r *run) int {
	ds, err := r.describeDirectories(r.args)
	if err != nil {
		return r.fail(err)
	}
	if len(ds) != 1 {
		return r.failf("ResourceNotFoundException: directory %s does not exist", r.args[0])
	}
	d := ds[0]
	if r.json {
		return r.printJSON(d)
	}
	t := newTable(r.stdout)
	t.row("Directory:", d.DirectoryId)
	t.row("DNS name:", d.DirectoryName)
	t.row("Alias:", dash(d.Alias))
	t.row("Type:", d.Type)
	t.row("State:", d.State)
	t.row("Registration code:", dash(d.RegistrationCode))
	t.row("Users:", fmt.Sprint(d.Users))
	t.flush()
	login, err := yaml.Marshal(struct {
		Login catalog.Login `yaml:"login"`
	}{d.Login})
	if err == nil {
		fmt.Fprintf(r.stdout, "\n%s", login)
	}
	return exitOK
}

func directoriesList(r *run) int {
	ds, err := r.describeDirectories(nil)
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(map[string]any{"Directories": ds})
	}
	if len(ds) == 0 {
		return r.done("No directories. Define one: %s directory put --file DIR.yaml", prog)
	}
	t := newTable(r.stdout)
	t.row("DIRECTORY", "NAME", "ALIAS", "TYPE", "REGISTRATION CODE", "STATE", "USERS")
	for _, d := range ds {
		t.row(d.DirectoryId, d.DirectoryName, dash(d.Alias), d.Type, dash(d.RegistrationCode), d.State, fmt.Sprint(d.Users))
	}
	t.flush()
	return exitOK
}

func parseTags(kvs []string) ([]types.Tag, error) {
	var out []types.Tag
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q: want KEY=VALUE", kv)
		}
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out, nil
}

func directoriesRegister(r *run) int {
	tags, err := parseTags(r.tags)
	if err != nil {
		return r.usageError("%v", err)
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	id := r.args[0]
	if _, err := c.RegisterWorkspaceDirectory(r.ctx, &workspaces.RegisterWorkspaceDirectoryInput{DirectoryId: aws.String(id),
		EnableSelfService: aws.Bool(r.selfService), Tags: tags}); err != nil {
		return r.fail(err)
	}
	out, err := c.DescribeWorkspaceDirectories(r.ctx, &workspaces.DescribeWorkspaceDirectoriesInput{DirectoryIds: []string{id}})
	if err != nil || len(out.Directories) != 1 {
		return r.done("%s: registered", id)
	}
	return r.done("%s: registered; registration code %s", id, aws.ToString(out.Directories[0].RegistrationCode))
}

func directoriesDeregister(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.DeregisterWorkspaceDirectory(r.ctx, &workspaces.DeregisterWorkspaceDirectoryInput{DirectoryId: aws.String(r.args[0])}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: deregistered", r.args[0])
}

func directoriesAccess(r *run) int {
	p := &types.WorkspaceAccessProperties{}
	set := map[string]*types.AccessPropertyValue{
		"windows": &p.DeviceTypeWindows, "macos": &p.DeviceTypeOsx, "linux": &p.DeviceTypeLinux, "web": &p.DeviceTypeWeb,
		"ios": &p.DeviceTypeIos, "android": &p.DeviceTypeAndroid, "chromeos": &p.DeviceTypeChromeOs, "zeroclient": &p.DeviceTypeZeroClient,
	}
	n := 0
	for _, l := range []struct {
		list multi
		v    types.AccessPropertyValue
	}{{r.allow, types.AccessPropertyValueAllow}, {r.deny, types.AccessPropertyValueDeny}} {
		for _, item := range l.list {
			for _, t := range strings.Split(item, ",") {
				dst, ok := set[strings.ToLower(strings.TrimSpace(t))]
				if !ok {
					return r.usageError("device type %q: want windows, macos, linux, web, ios, android, chromeos or zeroclient", t)
				}
				*dst = l.v
				n++
			}
		}
	}
	if n == 0 {
		return r.usageError("give --allow or --deny")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.ModifyWorkspaceAccessProperties(r.ctx, &workspaces.ModifyWorkspaceAccessPropertiesInput{ResourceId: aws.String(r.args[0]), WorkspaceAccessProperties: p}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: device access changed", r.args[0])
}

// --- users ---

func usersList(r *run) int {
	if r.directory == "" {
		return r.usageError("--directory is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeUsers(r.ctx, &hostdclient.DirectoryIDInput{DirectoryId: r.directory})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out)
	}
	if len(out.Users) == 0 {
		return r.done("No users in %s.", r.directory)
	}
	t := newTable(r.stdout)
	t.row("USER", "FIRST NAME", "LAST NAME", "EMAIL")
	for _, u := range out.Users {
		t.row(u.UserName, dash(u.FirstName), dash(u.LastName), dash(u.Email))
	}
	t.flush()
	return exitOK
}

func usersAdd(r *run) int {
	if r.directory == "" || r.user == "" {
		return r.usageError("--directory and --user are required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	u := hostdclient.User{UserName: r.user, Email: r.email, FirstName: r.first, LastName: r.last}
	if err := c.CreateUsers(r.ctx, &hostdclient.CreateUsersInput{DirectoryId: r.directory, Users: []hostdclient.User{u}}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: user %s added", r.directory, r.user)
}

func usersRemove(r *run) int {
	if r.directory == "" {
		return r.usageError("--directory is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if err := c.DeleteUsers(r.ctx, &hostdclient.DeleteUsersInput{DirectoryId: r.directory, UserNames: r.args}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: removed %s", r.directory, strings.Join(r.args, ", "))
}

// --- IP access control groups ---

func rulesOf(specs []string) []types.IpRuleItem {
	var out []types.IpRuleItem
	for _, s := range specs {
		cidr, desc, _ := strings.Cut(s, "=")
		it := types.IpRuleItem{IpRule: aws.String(strings.TrimSpace(cidr))}
		if desc != "" {
			it.RuleDesc = aws.String(desc)
		}
		out = append(out, it)
	}
	return out
}

func ipgroupsList(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	var all []types.WorkspacesIpGroup
	in := &workspaces.DescribeIpGroupsInput{}
	for {
		page, err := c.DescribeIpGroups(r.ctx, in)
		if err != nil {
			return r.fail(err)
		}
		all = append(all, page.Result...)
		if aws.ToString(page.NextToken) == "" {
			break
		}
		in.NextToken = page.NextToken
	}
	if r.json {
		return r.printJSON(map[string]any{"Result": all})
	}
	if len(all) == 0 {
		return r.done("No IP access control groups.")
	}
	t := newTable(r.stdout)
	t.row("GROUP", "NAME", "RULES", "DESCRIPTION")
	for _, g := range all {
		var rules []string
		for _, ru := range g.UserRules {
			s := aws.ToString(ru.IpRule)
			if d := aws.ToString(ru.RuleDesc); d != "" {
				s += " (" + d + ")"
			}
			rules = append(rules, s)
		}
		t.row(aws.ToString(g.GroupId), aws.ToString(g.GroupName), dash(strings.Join(rules, ", ")), dash(aws.ToString(g.GroupDesc)))
	}
	t.flush()
	return exitOK
}

func ipgroupsCreate(r *run) int {
	if r.name == "" {
		return r.usageError("--name is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	in := &workspaces.CreateIpGroupInput{GroupName: aws.String(r.name), UserRules: rulesOf(r.rules)}
	if r.description != "" {
		in.GroupDesc = aws.String(r.description)
	}
	out, err := c.CreateIpGroup(r.ctx, in)
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s", aws.ToString(out.GroupId))
}

func ipgroupsDelete(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.DeleteIpGroup(r.ctx, &workspaces.DeleteIpGroupInput{GroupId: aws.String(r.args[0])}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: deleted", r.args[0])
}

func ipgroupsRules(r *run) int {
	if len(r.rules) == 0 {
		return r.usageError("give at least one --rule")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	var err error
	if r.cmd.name == "ipgroups update" {
		_, err = c.UpdateRulesOfIpGroup(r.ctx, &workspaces.UpdateRulesOfIpGroupInput{GroupId: aws.String(r.args[0]), UserRules: rulesOf(r.rules)})
	} else {
		_, err = c.AuthorizeIpRules(r.ctx, &workspaces.AuthorizeIpRulesInput{GroupId: aws.String(r.args[0]), UserRules: rulesOf(r.rules)})
	}
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s: rules changed", r.args[0])
}

func ipgroupsRevoke(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.RevokeIpRules(r.ctx, &workspaces.RevokeIpRulesInput{GroupId: aws.String(r.args[0]), UserRules: r.args[1:]}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: revoked %s", r.args[0], strings.Join(r.args[1:], ", "))
}

func ipgroupsAssociation(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	dir, groups := r.args[0], r.args[1:]
	var err error
	verb := "associated with"
	if r.cmd.name == "ipgroups disassociate" {
		verb = "disassociated from"
		_, err = c.DisassociateIpGroups(r.ctx, &workspaces.DisassociateIpGroupsInput{DirectoryId: aws.String(dir), GroupIds: groups})
	} else {
		_, err = c.AssociateIpGroups(r.ctx, &workspaces.AssociateIpGroupsInput{DirectoryId: aws.String(dir), GroupIds: groups})
	}
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s %s %s", strings.Join(groups, ", "), verb, dir)
}

// --- bundles and images ---

func bundlesCreate(r *run) int {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--name", r.name}, {"--description", r.description}, {"--image", r.image}, {"--compute", r.compute}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if r.userGiB == 0 {
		missing = append(missing, "--user-gib")
	}
	if len(missing) > 0 {
		return r.usageError("missing %s", strings.Join(missing, ", "))
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	in := &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String(r.name), BundleDescription: aws.String(r.description),
		ImageId: aws.String(r.image), ComputeType: &types.ComputeType{Name: types.Compute(strings.ToUpper(r.compute))},
		UserStorage: &types.UserStorage{Capacity: aws.String(fmt.Sprint(r.userGiB))}}
	if r.rootGiB != 0 {
		in.RootStorage = &types.RootStorage{Capacity: aws.String(fmt.Sprint(r.rootGiB))}
	}
	out, err := c.CreateWorkspaceBundle(r.ctx, in)
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.WorkspaceBundle)
	}
	return r.done("%s", aws.ToString(out.WorkspaceBundle.BundleId))
}

func bundlesUpdate(r *run) int {
	if r.image == "" {
		return r.usageError("--image is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.UpdateWorkspaceBundle(r.ctx, &workspaces.UpdateWorkspaceBundleInput{BundleId: aws.String(r.args[0]), ImageId: aws.String(r.image)}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: now image %s (existing WorkSpaces keep theirs until rebuilt)", r.args[0], r.image)
}

func bundlesDelete(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.DeleteWorkspaceBundle(r.ctx, &workspaces.DeleteWorkspaceBundleInput{BundleId: aws.String(r.args[0])}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: deleted (queued until the WorkSpaces that use it are gone, if any)", r.args[0])
}

func imagesList(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	var all []types.WorkspaceImage
	in := &workspaces.DescribeWorkspaceImagesInput{}
	for {
		page, err := c.DescribeWorkspaceImages(r.ctx, in)
		if err != nil {
			return r.fail(err)
		}
		all = append(all, page.Images...)
		if aws.ToString(page.NextToken) == "" {
			break
		}
		in.NextToken = page.NextToken
	}
	if r.json {
		return r.printJSON(map[string]any{"Images": all})
	}
	if len(all) == 0 {
		return r.done("No images. Register one: %s images register --dir DIR", prog)
	}
	t := newTable(r.stdout)
	t.row("IMAGE", "NAME", "OS", "STATE", "DESCRIPTION")
	for _, i := range all {
		os := "-"
		if i.OperatingSystem != nil {
			os = string(i.OperatingSystem.Type)
		}
		desc := aws.ToString(i.Description)
		if i.State == types.WorkspaceImageStateError {
			desc = aws.ToString(i.ErrorCode) + ": " + aws.ToString(i.ErrorMessage)
		}
		t.row(aws.ToString(i.ImageId), aws.ToString(i.Name), os, string(i.State), dash(desc))
	}
	t.flush()
	return exitOK
}

func imagesRegister(r *run) int {
	if r.dir == "" {
		return r.usageError("--dir is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.RegisterImage(r.ctx, &hostdclient.RegisterImageInput{Directory: r.dir, ImageId: r.id, Name: r.name, Description: r.description})
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s", out.ImageId)
}

func imagesCreate(r *run) int {
	if r.name == "" || r.description == "" {
		return r.usageError("--name and --description are required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.CreateWorkspaceImage(r.ctx, &workspaces.CreateWorkspaceImageInput{WorkspaceId: aws.String(r.args[0]),
		Name: aws.String(r.name), Description: aws.String(r.description)})
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s: %s (the WorkSpace is SUSPENDED until the capture ends; %s images shows the image's state)", aws.ToString(out.ImageId), out.State, prog)
}

func imagesCopy(r *run) int {
	if r.name == "" {
		return r.usageError("--name is required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	in := &workspaces.CopyWorkspaceImageInput{SourceImageId: aws.String(r.args[0]), Name: aws.String(r.name), SourceRegion: aws.String(c.Options().Region)}
	if r.description != "" {
		in.Description = aws.String(r.description)
	}
	out, err := c.CopyWorkspaceImage(r.ctx, in)
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s", aws.ToString(out.ImageId))
}

func imagesImport(r *run) int {
	if r.dir == "" || r.name == "" || r.description == "" {
		return r.usageError("--source, --name and --description are required")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.ImportImage(r.ctx, &hostdclient.ImportImageInput{Source: r.dir, IngestionProcess: "BYOL_REGULAR",
		ImageName: r.name, ImageDescription: r.description, BaseImageId: r.image})
	if err != nil {
		return r.fail(err)
	}
	return r.done("%s: PENDING (fetched, checked and test-booted; %s images shows AVAILABLE or ERROR with the reason)", out.ImageId, prog)
}

func imagesDelete(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.DeleteWorkspaceImage(r.ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(r.args[0])}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: deleted from the catalog", r.args[0])
}

// --- tags ---

func tagsList(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeTags(r.ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String(r.args[0])})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(map[string]any{"TagList": out.TagList})
	}
	if len(out.TagList) == 0 {
		return r.done("No tags on %s.", r.args[0])
	}
	t := newTable(r.stdout)
	t.row("KEY", "VALUE")
	for _, tg := range out.TagList {
		t.row(aws.ToString(tg.Key), aws.ToString(tg.Value))
	}
	t.flush()
	return exitOK
}

func tagsAdd(r *run) int {
	tags, err := parseTags(r.args[1:])
	if err != nil {
		return r.usageError("%v", err)
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.CreateTags(r.ctx, &workspaces.CreateTagsInput{ResourceId: aws.String(r.args[0]), Tags: tags}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: %d tags set", r.args[0], len(tags))
}

func tagsRemove(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	if _, err := c.DeleteTags(r.ctx, &workspaces.DeleteTagsInput{ResourceId: aws.String(r.args[0]), TagKeys: r.args[1:]}); err != nil {
		return r.fail(err)
	}
	return r.done("%s: removed %s", r.args[0], strings.Join(r.args[1:], ", "))
}
