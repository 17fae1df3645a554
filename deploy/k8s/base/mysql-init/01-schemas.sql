-- One schema per app (the four services and the dashboard) and one MySQL user
-- per schema, granted that schema only: an app cannot read another app's data
-- even by mistake.
-- Run once by the mariadb image on an empty data volume (a volume made before
-- a schema was added here needs `docker compose down -v`). The passwords are
-- for the lab's containers only; docker-compose.yml uses the same ones.
-- ("\_" keeps "_" from acting as a wildcard in the database-level grants.)

CREATE DATABASE IF NOT EXISTS `lab_users` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_orders` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_inventory` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_payments` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS `lab_dashboard` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE USER IF NOT EXISTS 'lab_users'@'%' IDENTIFIED BY 'lab_users_pw';
CREATE USER IF NOT EXISTS 'lab_orders'@'%' IDENTIFIED BY 'lab_orders_pw';
CREATE USER IF NOT EXISTS 'lab_inventory'@'%' IDENTIFIED BY 'lab_inventory_pw';
CREATE USER IF NOT EXISTS 'lab_payments'@'%' IDENTIFIED BY 'lab_payments_pw';
CREATE USER IF NOT EXISTS 'lab_dashboard'@'%' IDENTIFIED BY 'lab_dashboard_pw';

GRANT ALL PRIVILEGES ON `lab\_users`.* TO 'lab_users'@'%';
GRANT ALL PRIVILEGES ON `lab\_orders`.* TO 'lab_orders'@'%';
GRANT ALL PRIVILEGES ON `lab\_inventory`.* TO 'lab_inventory'@'%';
GRANT ALL PRIVILEGES ON `lab\_payments`.* TO 'lab_payments'@'%';
GRANT ALL PRIVILEGES ON `lab\_dashboard`.* TO 'lab_dashboard'@'%';

FLUSH PRIVILEGES;
