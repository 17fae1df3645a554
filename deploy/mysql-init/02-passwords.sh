# Sets each app's MySQL user's password (the users come from 01-schemas.sql)
# to the random one the keys job wrote on first start: one file per user,
# named after it, in $DATABASE_PASSWORDS_DIR. The app reads the same password
# from its own keys dir (DATABASE_PASSWORD_FILE), so none ships in a file.
#
# Not executable on purpose: the mariadb image sources a non-executable *.sh
# of /docker-entrypoint-initdb.d, which gives it the image's docker_process_sql
# (the client, connected as root to the server being initialised).

for user in lab_users lab_orders lab_inventory lab_payments lab_dashboard; do
	password="$(cat "${DATABASE_PASSWORDS_DIR:?is not set}/$user")"
	# The keys job writes URL-safe base64; anything else would need quoting in SQL.
	case "$password" in
		"" | *[!A-Za-z0-9_-]*)
			echo "02-passwords.sh: $DATABASE_PASSWORDS_DIR/$user is empty or not URL-safe base64" >&2
			exit 1
			;;
	esac
	docker_process_sql <<-SQL
		ALTER USER '$user'@'%' IDENTIFIED BY '$password';
	SQL
done
unset user password
