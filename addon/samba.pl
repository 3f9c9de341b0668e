#!/usr/bin/perl
# The vendor's samba example (PROTOCOL seeds/003), writing to var/samba.users instead of
# calling smbpasswd. A cgi after-handler with postdata="yes": CGI.pm reads the POST body.
use strict;
use warnings;
use CGI;

my $Q = CGI->new;
my $func = $Q->param("func") // "";
my $elid = $Q->param("elid") // "";
my $file = "var/samba.users";    # the handler runs with the root as working directory

sub read_users {
    open(my $in, "<", $file) or return ();
    chomp(my @users = <$in>);
    close($in);
    return @users;
}

sub write_users {
    open(my $out, ">", "$file.new") or die "cannot write $file.new: $!";
    print $out map { "$_\n" } @_;
    close($out) or die "cannot write $file.new: $!";
    rename("$file.new", $file) or die "cannot rename $file.new: $!";
}

if ($func eq "user.add" || $func eq "user.edit") {
    if ($Q->param("sok") && $elid eq "") {    # a user was created
        my $name = $Q->param("name");
        write_users((grep { $_ ne $name } read_users()), $name);
        print STDERR "samba: added $name\n";
    }
} elsif ($func eq "user.delete") {            # a group delete: names joined by ", "
    my %gone = map { $_ => 1 } split(", ", $elid);
    write_users(grep { !$gone{$_} } read_users());
    print STDERR "samba: removed $elid\n";
}

print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc/>\n";
