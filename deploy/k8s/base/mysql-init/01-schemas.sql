-- One schema per app (the four services and the dashboard) and one MySQL user
-- per schema, granted that schema only: an app cannot read another app's data
-- even by mistake.
-- Run once by the mariadb image on an empty data volume (a volume made before
-- a schema was added here needs `docker compose down -v`). The users get no
-- password here: 02-passwords.sh, run next, sets the random ones the keys job
-- wrote (the server takes no connection from outside until both have run).
-- ("\_" keeps "_" from acting as a wildcard in the database-level grants.)

CREATE DATABASE IF NOT EXISTS `lab_users` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_orders` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_inventory` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_payments` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_dashboard` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE USER IF NOT EXISTS 'lab_users'@'%';
CREATE USER IF NOT EXISTS 'lab_orders'@'%';
CREATE USER IF NOT EXISTS 'lab_inventory'@'%';
CREATE USER IF NOT EXISTS 'lab_payments'@'%';
CREATE USER IF NOT EXISTS 'lab_dashboard'@'%';

GRANT ALL PRIVILEGES ON `lab\_users`.* TO 'lab_users'@'%';
GRANT ALL PRIVILEGES ON `lab\_orders`.* TO 'lab_orders'@'%';
GRANT ALL PRIVILEGES ON `lab\_inventory`.* TO 'lab_inventory'@'%';
GRANT ALL PRIVILEGES ON `lab\_payments`.* TO 'lab_payments'@'%';
GRANT ALL PRIVILEGES ON `lab\_dashboard`.* TO 'lab_dashboard'@'%';

FLUSH PRIVILEGES;
